//! Ids the gateway hands out: a short prefix naming the type, then a UUIDv7 in hex. The
//! prefix tells a person reading a log or a support ticket what the id is (a launch, a
//! score, a job...); v7 keeps ids of one type in creation order, which lists rely on to
//! break ties.
//!
//! | prefix | what |
//! |---|---|
//! | `lch_` | a launch (SMART, LTI, SSO) |
//! | `scr_` | a score sent to an LMS |
//! | `job_` | a job |
//! | `key_` | an API key |
//! | `reg_` | an LTI dynamic registration |
//! | `lrl_` | an LTI registration link |
//! | `ep_` | a webhook endpoint |
//! | `msg_` | a webhook message |
//! | `stmt_` | a statement |
//! | `adj_` | a statement adjustment |
//! | `dlv_`, `att_` | a webhook delivery and attempt (store-numbered: the prefix and the number) |

pub const LAUNCH: &str = "lch";
pub const SCORE: &str = "scr";
pub const JOB: &str = "job";
pub const API_KEY: &str = "key";
pub const REGISTRATION: &str = "reg";
pub const REGISTRATION_LINK: &str = "lrl";
pub const ENDPOINT: &str = "ep";
pub const MESSAGE: &str = "msg";
pub const STATEMENT: &str = "stmt";
pub const ADJUSTMENT: &str = "adj";

/// A new id of the type `prefix` names.
pub fn new(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::now_v7().simple())
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_carry_their_prefix_and_sort_by_creation() {
        let a = super::new(super::JOB);
        let b = super::new(super::JOB);
        assert!(a.starts_with("job_") && a.len() == 4 + 32, "{a}");
        assert!(a < b);
    }
}
