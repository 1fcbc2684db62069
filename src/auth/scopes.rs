//! SMART scopes, v1 (`system/Observation.read`, `.write`, `.*`) and v2 (`system/Observation.rs`,
//! `cruds` subsets, `?param=value` restrictions), parsed into one form: context, resource type
//! (or `*`), the permitted interactions and the restriction.

/// One parsed scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    /// `system`, `patient` or `user`.
    pub context: String,
    /// A resource type or `*`.
    pub rtype: String,
    /// Permitted interactions as a subset of `c`, `r`, `u`, `d`, `s` (in that order).
    pub perms: String,
    /// A `?param=value` restriction (v2), if any.
    pub restriction: Option<String>,
}

impl Scope {
    /// Parse one scope token; None for what is not a resource scope (`launch`, `openid`, ...).
    pub fn parse(s: &str) -> Option<Scope> {
        let (context, rest) = s.split_once('/')?;
        if !matches!(context, "system" | "patient" | "user") {
            return None;
        }
        let (rtype, perm) = rest.split_once('.')?;
        let (perm, restriction) = match perm.split_once('?') {
            Some((p, q)) => (p, Some(q.to_string())),
            None => (perm, None),
        };
        let perms = match perm {
            "read" => "rs".to_string(),
            "write" => "cud".to_string(),
            "*" => "cruds".to_string(),
            p if !p.is_empty() && p.chars().all(|c| "cruds".contains(c)) => {
                // v2 permissions must appear in the order c, r, u, d, s without repeats
                let ordered: String = "cruds".chars().filter(|c| p.contains(*c)).collect();
                if ordered != p {
                    return None;
                }
                ordered
            }
            _ => return None,
        };
        if rtype != "*" && !crate::fhir::resource_types::is_resource_type(rtype) {
            return None;
        }
        Some(Scope {
            context: context.to_string(),
            rtype: rtype.to_string(),
            perms,
            restriction,
        })
    }

    /// True when this scope grants everything `other` asks for.
    pub fn covers(&self, other: &Scope) -> bool {
        self.context == other.context
            && (self.rtype == "*" || self.rtype == other.rtype)
            && other.perms.chars().all(|c| self.perms.contains(c))
            && match (&self.restriction, &other.restriction) {
                (None, _) => true,
                (Some(a), Some(b)) => a == b,
                (Some(_), None) => false,
            }
    }

    /// True when this scope permits interaction `perm` (one of `cruds`) on `rtype`.
    pub fn permits(&self, rtype: &str, perm: char) -> bool {
        (self.rtype == "*" || self.rtype == rtype) && self.perms.contains(perm)
    }
}

/// The requested scopes a client may have: each requested scope that one of the allowed scopes
/// covers. Returns (granted scope string, the tokens refused).
pub fn grant(allowed: &str, requested: &str) -> (String, Vec<String>) {
    let allowed: Vec<Scope> = allowed
        .split_whitespace()
        .filter_map(Scope::parse)
        .collect();
    let mut granted = Vec::new();
    let mut refused = Vec::new();
    for token in requested.split_whitespace() {
        match Scope::parse(token) {
            Some(s) if allowed.iter().any(|a| a.covers(&s)) => granted.push(token.to_string()),
            _ => refused.push(token.to_string()),
        }
    }
    (granted.join(" "), refused)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_and_v2_scopes_parse_to_the_same_permissions() {
        let v1 = Scope::parse("system/Observation.read").expect("v1");
        let v2 = Scope::parse("system/Observation.rs").expect("v2");
        assert_eq!(v1, v2);
        assert_eq!(Scope::parse("system/*.*").expect("all").perms, "cruds");
        assert_eq!(
            Scope::parse("system/Patient.write").expect("w").perms,
            "cud"
        );
        assert!(
            Scope::parse("system/Observation.sr").is_none(),
            "v2 order is c r u d s"
        );
        assert!(Scope::parse("system/Nonsense.rs").is_none());
        assert!(Scope::parse("launch").is_none());
        let q = Scope::parse("system/Observation.rs?category=laboratory").expect("restricted");
        assert_eq!(q.restriction.as_deref(), Some("category=laboratory"));
    }

    #[test]
    fn a_client_gets_only_what_its_registration_covers() {
        let (g, refused) = grant(
            "system/Observation.cruds system/Patient.rs",
            "system/Observation.rs system/Patient.read system/Patient.write system/*.rs",
        );
        assert_eq!(g, "system/Observation.rs system/Patient.read");
        assert_eq!(refused, ["system/Patient.write", "system/*.rs"]);
        let (g, _) = grant("system/*.rs", "system/MeasureReport.rs?category=vbp");
        assert_eq!(g, "system/MeasureReport.rs?category=vbp");
        let (g, refused) = grant(
            "system/MeasureReport.rs?category=vbp",
            "system/MeasureReport.rs",
        );
        assert!(
            g.is_empty() && refused.len() == 1,
            "a restricted grant does not widen"
        );
        let (g, _) = grant("system/Observation.rs", "patient/Observation.rs");
        assert!(g.is_empty(), "the context must match");
    }
}
