//! The resource types a contract can take a therapy exposure from (`cohort.sources`,
//! `washout_sources`, `source_order`), with their names as contract files spell them.

/// Where a therapy exposure came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Source {
    /// A pharmacy fill.
    MedicationDispense,
    /// An administration (infusion, injection).
    MedicationAdministration,
    /// A prescription.
    MedicationRequest,
    /// A procedure (for example a CAR-T infusion).
    Procedure,
}

impl Source {
    /// The resource type name.
    pub fn name(self) -> &'static str {
        match self {
            Source::MedicationDispense => "MedicationDispense",
            Source::MedicationAdministration => "MedicationAdministration",
            Source::MedicationRequest => "MedicationRequest",
            Source::Procedure => "Procedure",
        }
    }

    /// The source of a resource type name.
    pub fn of(rtype: &str) -> Option<Source> {
        Some(match rtype {
            "MedicationDispense" => Source::MedicationDispense,
            "MedicationAdministration" => Source::MedicationAdministration,
            "MedicationRequest" => Source::MedicationRequest,
            "Procedure" => Source::Procedure,
            _ => return None,
        })
    }
}
