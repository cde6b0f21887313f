//! Where results are assembled, all from cells the store holds (nothing here trains or
//! samples): the tables a run writes ([`table`]: rows → parquet + csv, with their checksums,
//! and back, refusing damaged ones), the figures ([`plot`]), the results folder of a run
//! ([`assemble`]: tables, resolved config, manifest) and the report of a results folder
//! ([`report`]: fits, scaling, stopping rules, aggregators, every figure and report.md, from
//! the saved tables alone).

pub mod assemble;
mod check;
pub mod plot;
pub mod report;
pub mod series;
pub mod table;
pub mod units;
