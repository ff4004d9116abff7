//! What dipc's tools share: dipcref's command line, the manual pages'
//! generator and the benchmark plots.

pub mod dipcref_cli;
pub mod man;
pub mod plot;
