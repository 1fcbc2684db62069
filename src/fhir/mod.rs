//! The FHIR model layer: parsing and serialization (fhirbolt), definitions, validation,
//! references and OperationOutcome.

pub mod definitions;
pub mod format;
pub mod invariants;
pub mod narrative;
pub mod number_text;
pub mod operation_definitions;
pub mod outcome;
pub mod references;
pub mod resource_types;
pub mod validate;
