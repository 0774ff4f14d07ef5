//! LTI roles normalised to what the app acts on: `learner`, `instructor`, `admin`. The
//! platform's original role URIs are kept beside them.

/// Normalised roles, sorted, without duplicates.
pub fn normalise(roles: &[String]) -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for r in roles {
        // The last path or fragment segment names the role in every vocabulary (LIS v2
        // membership, institution, system) and in the short forms LTI 1.1 sends.
        let name = r.rsplit(['#', '/']).next().unwrap_or(r);
        let role = match name {
            "Learner" | "Student" | "Member" | "Guest" | "Alumni" | "ProspectiveStudent" => {
                "learner"
            }
            "Instructor" | "TeachingAssistant" | "ContentDeveloper" | "Mentor" | "Faculty"
            | "Grader" => "instructor",
            "Administrator" | "SysAdmin" | "SysSupport" | "AccountAdmin" | "Manager" => "admin",
            _ => continue,
        };
        // Sub-roles (`.../membership/Instructor#TeachingAssistant`) count as their role.
        if !out.contains(&role) {
            out.push(role);
        }
    }
    out.sort_unstable();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_and_short_names_normalise() {
        let r = |v: &[&str]| normalise(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(
            r(&["http://purl.imsglobal.org/vocab/lis/v2/membership#Learner"]),
            ["learner"]
        );
        assert_eq!(
            r(&[
                "http://purl.imsglobal.org/vocab/lis/v2/membership#Instructor",
                "http://purl.imsglobal.org/vocab/lis/v2/institution/person#Administrator",
            ]),
            ["admin", "instructor"]
        );
        assert_eq!(
            r(&["http://purl.imsglobal.org/vocab/lis/v2/membership/Instructor#TeachingAssistant"]),
            ["instructor"]
        );
        assert_eq!(
            r(&["Learner", "urn:lti:role:ims/lis/Instructor"]),
            ["instructor", "learner"]
        );
        assert!(r(&[]).is_empty());
    }
}
