//! Who may do what in the console. Staff roles come from the company's IdP groups; partner
//! roles from an invitation or the partner's own IdP, and never reach another partner.

use std::collections::BTreeMap;

use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Admin,
    Finance,
    ReadOnly,
    PartnerAdmin,
    PartnerViewer,
}

impl Role {
    pub const ALL: [Role; 5] = [
        Role::Admin,
        Role::Finance,
        Role::ReadOnly,
        Role::PartnerAdmin,
        Role::PartnerViewer,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Finance => "finance",
            Role::ReadOnly => "read-only",
            Role::PartnerAdmin => "partner-admin",
            Role::PartnerViewer => "partner-viewer",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// Words for the page header.
    pub fn label(self) -> &'static str {
        match self {
            Role::Admin => "Administrator",
            Role::Finance => "Finance",
            Role::ReadOnly => "Read-only",
            Role::PartnerAdmin => "Partner administrator",
            Role::PartnerViewer => "Partner viewer",
        }
    }

    /// A partner's person (bound to one partner), as opposed to the company's staff.
    pub fn is_partner(self) -> bool {
        matches!(self, Role::PartnerAdmin | Role::PartnerViewer)
    }

    /// Month-end, statements and usage of every partner: readable by staff.
    pub fn reads_finance(self) -> bool {
        matches!(self, Role::Admin | Role::Finance | Role::ReadOnly)
    }

    /// Run periods, adjust, finalize, void.
    pub fn writes_finance(self) -> bool {
        matches!(self, Role::Admin | Role::Finance)
    }

    /// Keys, jobs, registrations, connections, invitations, the audit log.
    pub fn administers(self) -> bool {
        self == Role::Admin
    }

    /// A partner's own webhook endpoints and invitations.
    pub fn writes_partner(self) -> bool {
        self == Role::PartnerAdmin
    }

    /// The more powerful of two roles of the same audience: the first in [`Role::ALL`].
    fn rank(self) -> usize {
        Role::ALL
            .iter()
            .position(|r| *r == self)
            .unwrap_or(usize::MAX)
    }
}

/// Whose people a connection signs in to the console.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Audience {
    /// The company's own people: admin, finance, read-only. Config files only.
    Staff,
    /// The connection's partner's people, into its portal: partner-admin, partner-viewer.
    Partner,
}

impl Audience {
    pub fn roles(self) -> &'static [Role] {
        match self {
            Audience::Staff => &[Role::Admin, Role::Finance, Role::ReadOnly],
            Audience::Partner => &[Role::PartnerAdmin, Role::PartnerViewer],
        }
    }
}

/// `console = { audience = "staff", roles = { admin = ["gw-admins"], ... } }` on an SSO
/// connection: it signs people in to the console, each with the role its IdP groups give.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleAccess {
    pub audience: Audience,
    /// Role name → the IdP groups (OIDC `groups` claim, SAML group attribute values) that
    /// give it. Someone in several gets the most powerful.
    #[serde(default)]
    pub roles: BTreeMap<String, Vec<String>>,
    /// The role of someone in none of the groups; unset, such a person is refused.
    #[serde(default)]
    pub default_role: Option<String>,
}

impl ConsoleAccess {
    pub fn problems(&self) -> Vec<(String, String)> {
        let allowed = self.audience.roles();
        let names: Vec<&str> = allowed.iter().map(|r| r.as_str()).collect();
        let mut out = Vec::new();
        let mut check = |field: String, name: &str| {
            if !Role::parse(name).is_some_and(|r| allowed.contains(&r)) {
                out.push((
                    field,
                    format!(
                        "{name:?} is not a role for this audience: one of {}",
                        names.join(", ")
                    ),
                ));
            }
        };
        for name in self.roles.keys() {
            check(format!("console.roles.{name}"), name);
        }
        if let Some(d) = &self.default_role {
            check("console.default_role".into(), d);
        }
        if self.roles.is_empty() && self.default_role.is_none() {
            out.push((
                "console.roles".into(),
                "map at least one role to IdP groups, or set default_role".into(),
            ));
        }
        out
    }

    /// The role someone in `groups` gets, if any.
    pub fn role_for(&self, groups: &[String]) -> Option<Role> {
        let allowed = self.audience.roles();
        self.roles
            .iter()
            .filter(|(_, gs)| gs.iter().any(|g| groups.contains(g)))
            .filter_map(|(name, _)| Role::parse(name))
            .filter(|r| allowed.contains(r))
            .min_by_key(|r| r.rank())
            .or_else(|| {
                self.default_role
                    .as_deref()
                    .and_then(Role::parse)
                    .filter(|r| allowed.contains(r))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(text: &str) -> ConsoleAccess {
        toml::from_str(text).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn the_most_powerful_mapped_role_wins_and_unmapped_people_are_refused() {
        let a = access(
            r#"audience = "staff"
roles = { finance = ["fin"], admin = ["ops"], "read-only" = ["all-staff"] }"#,
        );
        assert!(a.problems().is_empty(), "{:?}", a.problems());
        let g = |xs: &[&str]| xs.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(a.role_for(&g(&["all-staff", "fin"])), Some(Role::Finance));
        assert_eq!(a.role_for(&g(&["fin", "ops"])), Some(Role::Admin));
        assert_eq!(a.role_for(&g(&["other"])), None);
        assert_eq!(a.role_for(&[]), None);
    }

    #[test]
    fn a_partner_connection_cannot_grant_staff_roles() {
        let a = access(
            r#"audience = "partner"
roles = { admin = ["x"], "partner-admin" = ["y"] }
default_role = "finance""#,
        );
        let fields: Vec<String> = a.problems().into_iter().map(|(f, _)| f).collect();
        assert_eq!(fields, ["console.roles.admin", "console.default_role"]);
        // Even unchecked, the mapping never hands out a role outside the audience.
        assert_eq!(a.role_for(&["x".to_owned()]), None);
        assert_eq!(a.role_for(&["y".to_owned()]), Some(Role::PartnerAdmin));
        let d = access("audience = \"partner\"\ndefault_role = \"partner-viewer\"");
        assert!(d.problems().is_empty());
        assert_eq!(d.role_for(&[]), Some(Role::PartnerViewer));
    }
}
