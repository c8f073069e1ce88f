//! S3 access keys: `<home>/s3-keys/<ACCESS KEY>.json`, each naming the keyring
//! key (ledger account) that pays for what the S3 key stores.

use rand_core::RngCore;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AccessKey {
    pub access_key: String,
    pub secret_key: String,
    /// Keyring key whose account pays and owns the buckets.
    pub key_name: String,
}

pub struct AccessKeys {
    dir: PathBuf,
}

fn random_string(len: usize, alphabet: &[u8]) -> String {
    let mut bytes = vec![0u8; len];
    rand_core::OsRng.fill_bytes(&mut bytes);
    bytes.iter().map(|b| alphabet[*b as usize % alphabet.len()] as char).collect()
}

impl AccessKeys {
    pub fn new(dir: PathBuf) -> AccessKeys {
        AccessKeys { dir }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A new access key for `key_name`.
    pub fn create(&self, key_name: &str) -> anyhow::Result<AccessKey> {
        std::fs::create_dir_all(&self.dir)?;
        let key = AccessKey {
            access_key: format!("TSR{}", random_string(17, b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")),
            secret_key: random_string(40, b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"),
            key_name: key_name.to_string(),
        };
        let path = self.dir.join(format!("{}.json", key.access_key));
        tessera_client::keyring::write_private_atomic(&path, serde_json::to_string_pretty(&key)?.as_bytes())?;
        Ok(key)
    }

    /// The first access key (by name) that pays with keyring key `key_name`.
    pub fn for_key(&self, key_name: &str) -> Option<AccessKey> {
        let mut names: Vec<String> = std::fs::read_dir(&self.dir)
            .ok()?
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter_map(|n| n.strip_suffix(".json").map(str::to_string))
            .collect();
        names.sort();
        names.into_iter().filter_map(|n| self.get(&n)).find(|k| k.key_name == key_name)
    }

    pub fn get(&self, access_key: &str) -> Option<AccessKey> {
        if access_key.is_empty() || !access_key.chars().all(|c| c.is_ascii_alphanumeric()) {
            return None;
        }
        let text = std::fs::read_to_string(self.dir.join(format!("{access_key}.json"))).ok()?;
        serde_json::from_str(&text).ok()
    }
}
