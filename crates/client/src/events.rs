//! The node's block stream (`GET /events`, server-sent events): one
//! `BlockEventDto` per committed block.

use std::io::{BufRead, BufReader, Read};
use std::time::Duration;

use crate::api::BlockEventDto;
use crate::ClientError;

pub enum StreamItem {
    Block(Box<BlockEventDto>),
    /// The node dropped blocks for this reader: re-read state instead.
    Lagged,
}

pub struct BlockStream {
    lines: std::io::Lines<BufReader<Box<dyn Read + Send + Sync>>>,
}

impl BlockStream {
    /// Connects to `<base_url>/events`. Blocks come every block interval and the
    /// node sends keep-alives, so a minute of silence ends the stream.
    pub fn connect(base_url: &str) -> Result<BlockStream, ClientError> {
        let url = format!("{}/events", base_url.trim_end_matches('/'));
        let agent = ureq::AgentBuilder::new().timeout_connect(Duration::from_secs(5)).timeout_read(Duration::from_secs(60)).build();
        let resp = agent.get(&url).call().map_err(|e| ClientError::Unreachable { url: url.clone(), reason: e.to_string() })?;
        Ok(BlockStream { lines: BufReader::new(resp.into_reader()).lines() })
    }
}

impl Iterator for BlockStream {
    type Item = StreamItem;

    /// The next block (or lag notice); `None` when the stream broke.
    fn next(&mut self) -> Option<StreamItem> {
        let mut data = String::new();
        let mut kind = String::new();
        loop {
            let line = self.lines.next()?.ok()?;
            if let Some(rest) = line.strip_prefix("data:") {
                data.push_str(rest.trim_start());
            } else if let Some(rest) = line.strip_prefix("event:") {
                kind = rest.trim().to_string();
            } else if line.is_empty() && !data.is_empty() {
                if kind == "lagged" {
                    return Some(StreamItem::Lagged);
                }
                if let Ok(block) = serde_json::from_str::<BlockEventDto>(&data) {
                    return Some(StreamItem::Block(Box::new(block)));
                }
                data.clear();
                kind.clear();
            }
        }
    }
}
