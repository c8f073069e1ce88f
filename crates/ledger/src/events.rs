//! Events: what a block did, recorded with it and streamed to clients.

use borsh::{BorshDeserialize, BorshSerialize};
use std::fmt::Display;

#[derive(Clone, Debug, PartialEq, Eq, BorshSerialize, BorshDeserialize, serde::Serialize, serde::Deserialize)]
pub struct Event {
    /// `module.action`, for example `market.lease_opened`.
    pub kind: String,
    pub attributes: Vec<(String, String)>,
}

impl Event {
    pub fn new(kind: &str) -> Event {
        Event { kind: kind.to_string(), attributes: Vec::new() }
    }

    pub fn attr(mut self, name: &str, value: impl Display) -> Event {
        self.attributes.push((name.to_string(), value.to_string()));
        self
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.attributes.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// Events collected while executing one transaction or one block phase.
pub type Events = Vec<Event>;
