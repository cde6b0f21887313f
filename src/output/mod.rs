//! Where the results are assembled: the tables a run writes ([`table`]: rows → parquet + csv,
//! with their checksums, and back, refusing damaged ones), the figures ([`plot`]), and the
//! report of a results folder ([`report`]: fits, scaling, stopping rules, aggregators, every
//! figure and report.md, from the saved tables alone).

mod check;
pub mod plot;
pub mod report;
pub mod table;
