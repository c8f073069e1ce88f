//! bank: accounts, balances, transfers, mint and burn, total supply.

mod exec;
mod msg;
mod params;
mod state;

pub use exec::{burn, credit, debit, execute, mint, transfer};
pub use msg::BankMsg;
pub use params::BankParams;
pub use state::{account, account_key, all_accounts, burned, put_account, supply, Account};
