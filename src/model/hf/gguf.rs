//! GGUF import (to be written).
