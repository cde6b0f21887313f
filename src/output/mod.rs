//! Where results are assembled: the tables (polars → parquet + csv), the figures
//! (plotters), `manifest.json` and the report, all written into the results folder from
//! cells the store holds. Nothing here trains or samples.

pub mod assemble;
pub mod plot;
pub mod table;
