//! Revenue-share statements (in progress): so far the money rules every line follows —
//! ISO 4217 minor units and an explicit rounding rule per agreement.

pub mod money;
