#!/usr/bin/env python3
"""PyTorch CPU twin of goodhart's hot workloads: what a PyTorch script of the same
experiment (experiments/quick.toml, the defaults of src/config/) would run, written the
idiomatic way (nn.Linear, nn.LayerNorm, scaled_dot_product_attention, torch.optim.AdamW).

Same architecture (pre-norm blocks, layer-norm eps 1e-5, fused qkv, ReLU MLP of 4·width,
token + position embeddings, causal attention; a scalar reward head read at the response
end; a policy with an LM head, a value head and PAD/BOS/SEP masked out of the logits),
same shapes and dtype (f32), same optimizer (AdamW, betas (0.9, 0.999), eps 1e-8, weight
decay 0.01 on every parameter, gradient clipping at global norm 1.0), same losses, same
batch sizes. Each workload's name, inputs and steps match the criterion bench of the same
name in benches/*.rs; the inputs of the reward-model and SFT workloads are the rows the
benches export to target/bench-data/ (the same lengths, so the same truncation), or, when
those files are missing, rows of the same layout drawn here.

Differences that are the point of a twin, not of the experiment: goodhart splits an SFT or
gold batch into 2 data-parallel shards (their gradients summed), the twin runs the batch
whole, as a PyTorch script would; sampling draws with torch.multinomial, goodhart on the
host from its own seeded stream.

    python twin.py --threads 1 --out torch_t1.csv [--only bt_step_xs,score_gold] [--secs 2]

writes `workload,threads,torch_ms`: the median wall time of one call, after a warm-up.
"""

import argparse
import csv
import json
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

# The quick world (src/world.rs, src/config/): 20 content tokens (2 of them flattery)
# after PAD, BOS, SEP, EOS; prompts of 4; responses of up to 16 tokens, end token included.
PAD, BOS, SEP, EOS, FIRST_CONTENT = 0, 1, 2, 3, 4
CONTENT = 20
VOCAB = FIRST_CONTENT + CONTENT  # 24
PROMPT_LEN = 4
MAX_RESPONSE = 16
PREFIX = 2 + PROMPT_LEN  # BOS, prompt, SEP
SEQ_LEN = PREFIX + MAX_RESPONSE  # 22
MLP_MULT = 4
MASKED = -1e9

# Shapes and training settings of the quick default.
POLICY = dict(layers=2, width=48, heads=4)
GOLD = dict(layers=4, width=64, heads=4)
PROXY = {"xs": dict(layers=1, width=8, heads=2), "s": dict(layers=2, width=16, heads=2), "m": dict(layers=2, width=40, heads=4)}
PROXY_BATCH, PROXY_LR = 64, 3e-3
GOLD_BATCH, GOLD_LR = 64, 3e-3
SFT_BATCH, SFT_LR = 64, 3e-3
INFER_BATCH = 512
# Rows of the scoring workloads: a slice of a best-of-n pool, four batches of INFER_BATCH
# (a run scores 32,768 rows per model per best-of-n cell).
SCORE_ROWS = 4 * INFER_BATCH
PPO = dict(rollout=64, minibatch=32, epochs=4, lr=3e-4, clip=0.2, value_clip=0.2, value_coef=0.1, entropy_coef=0.0,
           gae_lambda=0.95, gamma=1.0, max_grad_norm=1.0, members=3, beta=0.1)
MAX_GRAD_NORM = 1.0


# ---------------------------------------------------------------------------- models

class Block(nn.Module):
    def __init__(self, width, heads):
        super().__init__()
        self.heads, self.head_dim = heads, width // heads
        self.ln1 = nn.LayerNorm(width, eps=1e-5)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.ln2 = nn.LayerNorm(width, eps=1e-5)
        self.fc = nn.Linear(width, MLP_MULT * width)
        self.mlp_proj = nn.Linear(MLP_MULT * width, width)

    def forward(self, x, cache=None, layer=0):
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=2)
        q, k, v = (z.view(b, t, self.heads, self.head_dim).transpose(1, 2) for z in (q, k, v))
        offset = 0
        if cache is not None:
            if cache[layer] is not None:
                pk, pv = cache[layer]
                offset = pk.shape[2]
                k, v = torch.cat([pk, k], 2), torch.cat([pv, v], 2)
            cache[layer] = (k, v)
        # Causal: t > 1 only happens from position 0 here (whole sequences, or the prompt
        # that starts a cache); one new token attends to everything cached.
        assert t == 1 or offset == 0
        y = F.scaled_dot_product_attention(q, k, v, is_causal=t > 1)
        x = x + self.proj(y.transpose(1, 2).reshape(b, t, d))
        return x + self.mlp_proj(F.relu(self.fc(self.ln2(x))))


class Trunk(nn.Module):
    def __init__(self, layers, width, heads):
        super().__init__()
        self.tok_emb = nn.Embedding(VOCAB, width)
        self.pos_emb = nn.Embedding(SEQ_LEN, width)
        self.blocks = nn.ModuleList(Block(width, heads) for _ in range(layers))
        self.ln_f = nn.LayerNorm(width, eps=1e-5)

    def forward(self, tokens, cache=None):
        offset = 0 if cache is None or cache[0] is None else cache[0][0].shape[2]
        t = tokens.shape[1]
        x = self.tok_emb(tokens) + self.pos_emb(torch.arange(offset, offset + t))
        for i, block in enumerate(self.blocks):
            x = block(x, cache, i)
        return self.ln_f(x)


def seeded_init(model, layers, seed):
    """goodhart's seeded_init: norms 1/0, biases 0, embeddings N(0, 0.3²), linear weights
    N(0, 1/fan_in), residual output projections further scaled by 1/sqrt(2·layers)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "ln" in name:
                p.fill_(1.0 if name.endswith("weight") else 0.0)
            elif name.endswith("bias"):
                p.zero_()
            elif "emb" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
            else:
                std = 1.0 / math.sqrt(p.shape[-1])
                if name.endswith("proj.weight"):
                    std /= math.sqrt(2 * layers)
                p.copy_(torch.randn(p.shape, generator=g) * std)
    return model


class RewardModel(nn.Module):
    def __init__(self, layers, width, heads, seed=1):
        super().__init__()
        self.trunk = Trunk(layers, width, heads)
        self.score_head = nn.Linear(width, 1)
        seeded_init(self, layers, seed)
        self.offset, self.scale = 0.0, 1.0

    def raw(self, tokens, ends):
        """tokens (b, seq_len) int64, ends (b,) int64 → raw scores (b,). Positions after the
        last read-out position are not computed (attention is causal)."""
        t = int(ends.max()) + 1
        h = self.trunk(tokens[:, :t])
        picked = h[torch.arange(tokens.shape[0]), ends]
        return self.score_head(picked).squeeze(1)

    def score_set(self, tokens, ends):
        """Standardized scores of a set, in batches of INFER_BATCH sorted by length, no grad."""
        order = torch.argsort(ends, stable=True)
        out = torch.empty(tokens.shape[0])
        with torch.no_grad():
            for i in range(0, len(order), INFER_BATCH):
                idx = order[i:i + INFER_BATCH]
                out[idx] = self.raw(tokens[idx], ends[idx])
        return ((out - self.offset) / self.scale).numpy()


class Policy(nn.Module):
    def __init__(self, layers, width, heads, seed=1):
        super().__init__()
        self.trunk = Trunk(layers, width, heads)
        self.lm_head = nn.Linear(width, VOCAB)
        self.value_head = nn.Linear(width, 1)
        mask = torch.zeros(VOCAB)
        mask[[PAD, BOS, SEP]] = MASKED
        self.register_buffer("token_mask", mask)
        seeded_init(self, layers, seed)

    def forward(self, tokens, cache=None):
        h = self.trunk(tokens, cache)
        return self.lm_head(h) + self.token_mask, self.value_head(h).squeeze(-1)

    def response_logprobs(self, tokens):
        logits, _ = self(tokens)
        logp = F.log_softmax(logits[:, PREFIX - 1:PREFIX - 1 + MAX_RESPONSE], dim=-1)
        targets = tokens[:, PREFIX:PREFIX + MAX_RESPONSE]
        picked = logp.gather(2, targets.unsqueeze(2)).squeeze(2)
        return picked, (targets != PAD).float()

    def response_view(self, tokens):
        logits, values = self(tokens)
        logp_all = F.log_softmax(logits[:, PREFIX - 1:PREFIX - 1 + MAX_RESPONSE], dim=-1)
        targets = tokens[:, PREFIX:PREFIX + MAX_RESPONSE]
        logp = logp_all.gather(2, targets.unsqueeze(2)).squeeze(2)
        entropy = -(logp_all.exp() * logp_all).sum(-1)
        return logp, entropy, values[:, PREFIX - 1:PREFIX - 1 + MAX_RESPONSE], (targets != PAD).float()

    @torch.no_grad()
    def sample(self, prompts, temperature=1.0):
        """prompts (b, PROMPT_LEN) → (tokens (b, SEQ_LEN) encoded as goodhart does, ends (b,))."""
        b = prompts.shape[0]
        prefix = torch.cat([torch.full((b, 1), BOS), prompts, torch.full((b, 1), SEP)], 1)
        cache = [None] * len(self.trunk.blocks)
        logits = self._last_logits(prefix, cache)
        out = torch.full((b, MAX_RESPONSE), PAD, dtype=torch.long)
        done = torch.zeros(b, dtype=torch.bool)
        for step in range(MAX_RESPONSE):
            nxt = torch.multinomial(F.softmax(logits / temperature, -1), 1).squeeze(1)
            nxt = torch.where(done, torch.full_like(nxt, EOS), nxt)
            out[:, step] = torch.where(done, torch.full_like(nxt, PAD), nxt)
            done = done | (nxt == EOS)
            if bool(done.all()) or step + 1 == MAX_RESPONSE:
                break
            logits = self._last_logits(nxt.unsqueeze(1), cache)
        is_eos = out == EOS
        finished = is_eos.any(1)
        ends = torch.where(finished, PREFIX + is_eos.float().argmax(1), torch.full((b,), SEQ_LEN - 1))
        return torch.cat([prefix, out], 1), ends

    def _last_logits(self, tokens, cache):
        h = self.trunk(tokens, cache)[:, -1]
        return self.lm_head(h) + self.token_mask


def adamw(model, lr):
    return torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)


def step(model, opt, loss, max_norm=MAX_GRAD_NORM):
    """goodhart's Trainer::step: read the loss, backward, clip at the global norm, AdamW."""
    value = loss.item()
    if not math.isfinite(value):
        raise FloatingPointError("non-finite loss")
    opt.zero_grad(set_to_none=True)
    loss.backward()
    norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm))
    opt.step()
    return value, norm


# ---------------------------------------------------------------------------- data

def synthetic(n, seed):
    """Rows of goodhart's layout with the demonstrator's length law (1 + Binomial(14, p),
    mean about 6.5 content tokens, then EOS and PAD)."""
    rng = np.random.default_rng(seed)
    tokens = np.zeros((n, SEQ_LEN), dtype=np.int64)
    ends = np.zeros(n, dtype=np.int64)
    for i in range(n):
        length = 1 + rng.binomial(14, (6.5 - 1) / 14)
        row = [BOS] + list(rng.integers(FIRST_CONTENT, FIRST_CONTENT + 18, PROMPT_LEN)) + [SEP]
        row += list(rng.integers(FIRST_CONTENT, VOCAB, length)) + [EOS]
        tokens[i, :len(row)] = row
        ends[i] = PREFIX + length
    return tokens, ends


def load(data_dir, name, n, seed):
    """The rows the goodhart bench of `name` uses (target/bench-data/NAME.json)."""
    path = Path(data_dir) / f"{name}.json"
    if path.exists():
        d = json.loads(path.read_text())
        assert d["seq_len"] == SEQ_LEN, f"{path}: seq_len {d['seq_len']} != {SEQ_LEN}"
        tokens = np.asarray(d["tokens"], dtype=np.int64).reshape(-1, SEQ_LEN)
        ends = np.asarray(d["ends"], dtype=np.int64)
        assert len(ends) == n, f"{path}: {len(ends)} rows, expected {n}"
        return tokens, ends
    print(f"twin: {path} missing (run the goodhart benches first); drawing rows of the same layout", file=sys.stderr)
    return synthetic(n, seed)


def prompts(n, rng):
    return torch.from_numpy(rng.integers(FIRST_CONTENT, FIRST_CONTENT + 18, (n, PROMPT_LEN)))


# ---------------------------------------------------------------------------- workloads

def bt_step(size, data_dir):
    tokens, ends = load(data_dir, "bt_step", 2 * PROXY_BATCH, 1)
    rm = RewardModel(**PROXY[size])
    opt = adamw(rm, PROXY_LR)
    labels = np.random.default_rng(1).integers(0, 2, PROXY_BATCH).astype(bool)
    rows = np.arange(2 * PROXY_BATCH)

    def run():
        # Gather the pairs' rows (a sides, then b sides) as the training loop does.
        t = torch.from_numpy(tokens[rows])
        e = torch.from_numpy(ends[rows])
        s = rm.raw(t, e)
        sa, sb = s[:PROXY_BATCH], s[PROXY_BATCH:]
        sign = torch.from_numpy(np.where(labels, 1.0, -1.0).astype(np.float32))
        margin = (sa - sb) * sign
        return step(rm, opt, F.softplus(-margin).mean())

    return run


def score(cfg, data_dir):
    tokens, ends = load(data_dir, "score", SCORE_ROWS, 3)
    rm = RewardModel(**cfg)
    t, e = torch.from_numpy(tokens), torch.from_numpy(ends)
    return lambda: rm.score_set(t, e)


def gold_step(data_dir):
    tokens, ends = load(data_dir, "gold_step", GOLD_BATCH, 5)
    rm = RewardModel(**GOLD, seed=2)
    opt = adamw(rm, GOLD_LR)
    z = np.random.default_rng(2).standard_normal(GOLD_BATCH).astype(np.float32)
    rows = np.arange(GOLD_BATCH)

    def run():
        pred = rm.raw(torch.from_numpy(tokens[rows]), torch.from_numpy(ends[rows]))
        return step(rm, opt, F.mse_loss(pred, torch.from_numpy(z[rows])))

    return run


def sft_step(data_dir):
    tokens, _ = load(data_dir, "sft_step", SFT_BATCH, 4)
    policy = Policy(**POLICY)
    opt = adamw(policy, SFT_LR)
    rows = np.arange(SFT_BATCH)

    def run():
        logp, mask = policy.response_logprobs(torch.from_numpy(tokens[rows]))
        return step(policy, opt, -(logp * mask).sum() / mask.sum())

    return run


class Ppo:
    """PPO against a mean of three xs proxies (src/methods/ppo)."""

    def __init__(self):
        self.policy = Policy(**POLICY, seed=1)
        self.reference = Policy(**POLICY, seed=1)
        self.members = [RewardModel(**PROXY["xs"], seed=10 + i) for i in range(PPO["members"])]
        self.opt = adamw(self.policy, PPO["lr"])
        self.rng = np.random.default_rng(1)
        torch.manual_seed(1)

    def rollout(self):
        p = prompts(PPO["rollout"], self.rng)
        with torch.no_grad():
            tokens, ends = self.policy.sample(p, 1.0)
            logp, _, values, mask = self.policy.response_view(tokens)
            ref_logp, _ = self.reference.response_logprobs(tokens)
        score = np.mean([m.score_set(tokens, ends) for m in self.members], axis=0)
        return dict(tokens=tokens, logp=logp.numpy(), ref_logp=ref_logp.numpy(), values=values.numpy(),
                    mask=mask.numpy(), score=score.astype(np.float32))

    @staticmethod
    def advantages(ro):
        """Rewards (−β·k1 per token, the score on the last), GAE per response, whitened."""
        mask, values = ro["mask"], ro["values"]
        n = mask.sum(1).astype(int)
        rewards = -PPO["beta"] * (ro["logp"] - ro["ref_logp"]) * mask
        rows = np.arange(len(n))
        rewards[rows[n > 0], n[n > 0] - 1] += ro["score"][n > 0]
        adv = np.zeros_like(rewards)
        last = np.zeros(len(n), dtype=np.float32)
        for t in reversed(range(MAX_RESPONSE)):
            live = t < n
            next_v = np.where(t + 1 < n, values[:, min(t + 1, MAX_RESPONSE - 1)], 0.0)
            delta = rewards[:, t] + PPO["gamma"] * next_v - values[:, t]
            last = np.where(live, delta + PPO["gamma"] * PPO["gae_lambda"] * np.where(t + 1 < n, last, 0.0), 0.0)
            adv[:, t] = last
        ret = (adv + values) * mask
        m = mask > 0
        adv[m] = (adv[m] - adv[m].mean()) / (adv[m].std() + 1e-8)
        return rewards.astype(np.float32), adv.astype(np.float32), ret.astype(np.float32)

    def minibatch(self, tokens, targets, idx):
        logp, entropy, values, _ = self.policy.response_view(tokens[idx])
        old_logp, old_values, adv, ret, mask = (x[idx] for x in targets)

        def masked_mean(x):
            return (x * mask).sum() / mask.sum()

        log_ratio = logp - old_logp
        ratio = log_ratio.exp()
        pg = torch.maximum(-adv * ratio, -adv * ratio.clamp(1 - PPO["clip"], 1 + PPO["clip"]))
        policy_loss = masked_mean(pg)
        v_clipped = old_values + (values - old_values).clamp(-PPO["value_clip"], PPO["value_clip"])
        value_loss = 0.5 * masked_mean(torch.maximum((values - ret) ** 2, (v_clipped - ret) ** 2))
        ent = masked_mean(entropy)
        total = policy_loss + PPO["value_coef"] * value_loss - PPO["entropy_coef"] * ent
        with torch.no_grad():
            lr_ = log_ratio.detach()
            approx_kl = masked_mean((lr_.exp() - 1) - lr_)
            clipfrac = masked_mean(((ratio.detach() - 1).abs() > PPO["clip"]).float())
        parts = [policy_loss.item(), value_loss.item(), ent.item(), approx_kl.item(), clipfrac.item()]
        _, norm = step(self.policy, self.opt, total, PPO["max_grad_norm"])
        return parts, norm

    def prepare(self, ro):
        rewards, adv, ret = self.advantages(ro)
        targets = [torch.from_numpy(x) for x in (ro["logp"], ro["values"], adv, ret, ro["mask"])]
        return ro["tokens"], targets, rewards, ret

    def optimize(self, ro, prepared):
        tokens, targets, rewards, ret = prepared
        b = tokens.shape[0]
        sums, count, grad_norm = np.zeros(5), 0, 0.0
        for _ in range(PPO["epochs"]):
            order = torch.randperm(b)
            for i in range(0, b, PPO["minibatch"]):
                parts, norm = self.minibatch(tokens, targets, order[i:i + PPO["minibatch"]])
                sums += parts
                count += 1
                grad_norm = max(grad_norm, norm)
        # The update's diagnostics: summed k1 per response, explained variance.
        m = ro["mask"] > 0
        k1 = ((ro["logp"] - ro["ref_logp"]) * ro["mask"]).sum(1).mean()
        ev = 1 - np.var(ret[m] - ro["values"][m]) / np.var(ret[m])
        return sums / count, grad_norm, k1, ev, rewards.sum() / b

    def update_full(self):
        ro = self.rollout()
        return self.optimize(ro, self.prepare(ro))


def matmul_peak():
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    return lambda: torch.mm(a, b)


def workloads(data_dir):
    """name → a function that builds the workload and returns the call to time."""
    def ppo_fixture():
        ppo = Ppo()
        ro = ppo.rollout()
        return ppo, ro, ppo.prepare(ro)

    def ppo_minibatch():
        ppo, _, (tokens, targets, _, _) = ppo_fixture()
        idx = torch.arange(PPO["minibatch"])
        return lambda: ppo.minibatch(tokens, targets, idx)

    def ppo_update():
        ppo, ro, prepared = ppo_fixture()
        return lambda: ppo.optimize(ro, prepared)

    return {
        "bt_step_xs": lambda: bt_step("xs", data_dir),
        "bt_step_m": lambda: bt_step("m", data_dir),
        "score_proxy": lambda: score(PROXY["m"], data_dir),
        "score_gold": lambda: score(GOLD, data_dir),
        "gold_step": lambda: gold_step(data_dir),
        "sft_step": lambda: sft_step(data_dir),
        "ppo_rollout": lambda: Ppo().rollout,
        "ppo_minibatch": ppo_minibatch,
        "ppo_update": ppo_update,
        "ppo_update_full": lambda: Ppo().update_full,
        "matmul_peak": matmul_peak,
    }


def measure(fn, secs, min_reps=10, max_reps=10_000):
    """Warm-up (a quarter of `secs`, at least 3 calls), then the median of at least
    `min_reps` calls over about `secs` seconds; milliseconds."""
    t0 = time.perf_counter()
    warm = 0
    while warm < 3 or time.perf_counter() - t0 < secs / 4:
        fn()
        warm += 1
    times = []
    t0 = time.perf_counter()
    while len(times) < max_reps and (len(times) < min_reps or time.perf_counter() - t0 < secs):
        s = time.perf_counter()
        fn()
        times.append(time.perf_counter() - s)
    return 1e3 * statistics.median(times), len(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    ap.add_argument("--out", required=True, help="CSV to write: workload,threads,torch_ms")
    ap.add_argument("--secs", type=float, default=2.0, help="measurement time per workload")
    ap.add_argument("--only", default="", help="comma-separated workloads (default: all)")
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "target" / "bench-data"),
                    help="the goodhart benches' exported inputs")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    table = workloads(args.data)
    names = [n for n in args.only.split(",") if n] or list(table)
    unknown = [n for n in names if n not in table]
    if unknown:
        ap.error(f"unknown workloads {unknown}; known: {', '.join(table)}")
    print(f"twin: torch {torch.__version__}, {torch.get_num_threads()} thread(s)", file=sys.stderr)
    rows = []
    for name in names:
        fn = table[name]()
        ms, reps = measure(fn, args.secs)
        print(f"  {name:<16} {ms:10.3f} ms  (median of {reps})", file=sys.stderr)
        rows.append((name, args.threads, f"{ms:.4f}"))
    with open(args.out, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["workload", "threads", "torch_ms"])
        w.writerows(rows)


if __name__ == "__main__":
    main()
