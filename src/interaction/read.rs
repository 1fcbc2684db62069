//! read and vread.

use serde_json::Value;

use super::Services;
use crate::auth::access::Act;
use crate::error::{FhirError, Result};
use crate::fhir::references::check_id;
use crate::store::VersionRecord;

/// A version read back, with its parsed resource.
#[derive(Debug, Clone)]
pub struct Found {
    /// The stored record.
    pub record: VersionRecord,
    /// The resource JSON.
    pub resource: Value,
}

/// Parse the JSON held in a live record.
pub fn resource_of(record: &VersionRecord) -> Result<Value> {
    let bytes = record.resource.as_deref().unwrap_or_default();
    crate::fhir::number_text::parse(bytes)
        .map_err(|e| FhirError::Storage(format!("corrupt stored resource: {e}")))
}

fn live(record: Option<VersionRecord>, what: &str) -> Result<Found> {
    match record {
        None => Err(FhirError::NotFound(format!("{what} is not known"))),
        Some(r) if r.deleted() => Err(FhirError::Gone(format!(
            "{what} was deleted (version {})",
            r.version
        ))),
        Some(r) => Ok(Found {
            resource: resource_of(&r)?,
            record: r,
        }),
    }
}

impl Services {
    /// `GET [type]/[id]`: 404 if unknown, 410 if deleted.
    pub fn read(&self, rtype: &str, id: &str) -> Result<Found> {
        check_id(id)?;
        self.access.allow(Act::Read, rtype)?;
        let what = format!("{rtype}/{id}");
        self.visible(rtype, live(self.store.current(rtype, id)?, &what), &what)
    }

    /// A read as the caller may see it: another party's resource (or its deletion) is
    /// "not known".
    fn visible(&self, rtype: &str, found: Result<Found>, what: &str) -> Result<Found> {
        if !self.access.filters(Act::Read, rtype) {
            return found;
        }
        match found {
            Ok(f) if self.access.sees(Act::Read, rtype, &f.resource) => Ok(f),
            Err(e @ FhirError::NotFound(_)) => Err(e),
            _ => Err(FhirError::NotFound(format!("{what} is not known"))),
        }
    }

    /// `GET [type]/[id]/_history/[vid]`.
    pub fn vread(&self, rtype: &str, id: &str, vid: &str) -> Result<Found> {
        check_id(id)?;
        let version: u64 = vid.parse().map_err(|_| {
            FhirError::NotFound(format!("version '{vid}' of {rtype}/{id} is not known"))
        })?;
        self.access.allow(Act::Read, rtype)?;
        let what = format!("{rtype}/{id}/_history/{vid}");
        self.visible(
            rtype,
            live(self.store.version(rtype, id, version)?, &what),
            &what,
        )
    }
}
