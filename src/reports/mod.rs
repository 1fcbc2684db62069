//! What the server publishes from the engine's results: per-patient outcome results as FHIR
//! `Parameters`, and the VBPR and DEQM MeasureReports (quality, performance, individual,
//! subject-list).

pub mod common;
pub mod data_requirements;
pub mod individual;
pub mod patient_results;
pub mod performance;
pub mod publish;
pub mod quality;
pub mod schedule;
pub mod set;
pub mod small_cells;
pub mod subject_list;
