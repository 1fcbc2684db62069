//! vbc-server: a FHIR R4 server for outcomes-based drug contracts.
//!
//! Requests flow one way: [`http`] (axum handlers) -> [`interaction`] (what each FHIR interaction
//! does) -> [`auth`] (who may do what, audit) -> [`engine`] (outcomes) -> [`contracts`] (the rule
//! format) -> [`search`] (index entries, criteria) -> [`store`] (the storage trait, its key layout
//! on an ordered key-value engine, sled or fjall) -> [`fhir`] (parsing, validation), with
//! [`days`] and [`clock`] at the bottom. Errors are [`error::FhirError`], turned into
//! OperationOutcome responses in one place.

pub mod auth;
pub mod bench;
pub mod clock;
pub mod config;
pub mod contracts;
pub mod days;
pub mod engine;
pub mod error;
pub mod fhir;
pub mod http;
pub mod interaction;
pub mod load_contract_command;
pub mod maintenance;
pub mod migrate_command;
pub mod reports;
pub mod search;
pub mod server;
pub mod settlement;
pub mod store;
pub mod synth;
