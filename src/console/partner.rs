//! The partner portal: a partner user sees its own partner's issued statements, never
//! another's (every query is scoped by the session's partner, not by anything the request
//! names).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use maud::html;

use super::auth::Signed;
use super::finance::money;
use super::layout::{error, page, see_other};
use crate::state::AppState;
use crate::statements::model::Status;
use crate::statements::store::{ListFilter, list_statements};

/// `GET /console/partner`: the partner's issued statements, newest period first.
pub async fn home(State(state): State<AppState>, s: Signed) -> Response {
    let v = &s.viewer;
    let Some(partner) = v.partner.clone().filter(|_| v.role.is_partner()) else {
        // Staff have the month-end page for every partner.
        return see_other("/console/finance");
    };
    let filter = ListFilter {
        partner: Some(partner.clone()),
        period: None,
        statuses: vec![Status::Finalized, Status::Void],
        agreement: None,
    };
    let items = match list_statements(&state.db, &filter, None, 500).await {
        Ok(items) => items,
        Err(e) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Your statements could not be read",
                &format!("{e:#}"),
            );
        }
    };
    let name = state
        .config
        .partner(&partner)
        .map_or_else(|| partner.clone(), |p| p.name.clone());
    let body = html! {
        h1 { "Statements for " (name) }
        @if items.is_empty() {
            p { "No statement has been issued to you yet." }
        } @else {
            table {
                caption { "Issued statements, newest period first" }
                thead { tr {
                    th scope="col" { "Number" }
                    th scope="col" { "Period" }
                    th scope="col" { "Status" }
                    th.num scope="col" { "Amount payable" }
                    th scope="col" { "Download" }
                } }
                tbody {
                    @for st in &items {
                        @let n = st.number_display.clone().unwrap_or_else(|| st.id.clone());
                        tr {
                            th scope="row" { a href={ "/console/statements/" (st.id) } { (n) } }
                            td { (st.document.period) }
                            td { @if st.status == Status::Void { span class="status status-void" { "void" } } @else { span class="status status-finalized" { "issued" } } }
                            td.num { (money(st.document.settlement.as_ref().map_or(st.document.total, |x| x.amount_payable), &st.document.currency)) }
                            td {
                                a href={ "/console/statements/" (st.id) "/download?format=pdf" } aria-label={ "PDF of " (n) } { "PDF" }
                                " · "
                                a href={ "/console/statements/" (st.id) "/download?format=csv" } aria-label={ "CSV of " (n) } { "CSV" }
                            }
                        }
                    }
                }
            }
        }
    };
    page(Some(v), "Statements", "/console/partner", body)
}
