//! vbc-server: a FHIR R4 server for outcomes-based drug contracts.
//!
//! Requests flow one way: [`http`] (axum handlers) -> [`interaction`] (what each FHIR interaction
//! does) -> [`fhir`] (parsing, validation) and [`search`] (index entries, criteria) -> [`store`]
//! (the storage trait and its sled engine). Errors are [`error::FhirError`], turned into
//! OperationOutcome responses in one place.

pub mod auth;
pub mod bench;
pub mod config;
pub mod contracts;
pub mod engine;
pub mod error;
pub mod fhir;
pub mod http;
pub mod interaction;
pub mod maintenance;
pub mod reports;
pub mod search;
pub mod server;
pub mod settlement;
pub mod store;
pub mod synth;
