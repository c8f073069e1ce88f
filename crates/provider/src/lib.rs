//! The provider agent: what a node operator runs to offer compute and disk.
//! It registers its hardware and prices, heartbeats, follows the market through
//! the node's event stream and bids by its price strategy (`decide`, pure),
//! runs leased jobs (`executor`, on the `tessera-runtime` sandboxes) and serves
//! their results from a content-addressed store (`results`, small files inline in
//! the run book, `book`, with each run's outcome and log); for storage it
//! keeps pieces (`piece_store`), serves them, answers challenges and rebuilds
//! pieces it is missing (`repair`).

pub mod agent;
pub mod book;
pub mod decide;
pub mod executor;
pub mod hardware;
pub mod market;
pub mod piece_store;
pub mod repair;
pub mod results;
pub mod server;
