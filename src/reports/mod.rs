//! What the server publishes from the engine's results: per-patient outcome results as FHIR
//! `Parameters` (and, with settlement, the VBPR and DEQM MeasureReports).

pub mod patient_results;
