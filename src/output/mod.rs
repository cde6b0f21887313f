//! Where the results are assembled: the tables a run writes ([`table`]: rows → parquet + csv,
//! and back), the figures ([`plot`]), and the report of a results folder ([`report`]: fits,
//! scaling, stopping rules, aggregators and report.md, from the saved tables alone).

pub mod plot;
pub mod report;
pub mod table;
