//! Sentence embeddings: a BERT-family model (all-MiniLM-L6-v2) run by candle,
//! mean-pooled over each sentence's tokens, optionally scaled to unit length.
//!
//! Output formats (documented in `examples/jobs/README.md`):
//! - npy: NumPy version 1.0, `<f4`, C order, shape (sentences, dimensions);
//! - json: `{"model": "<blake3>", "dimensions": n, "vectors": [[...], ...]}`.

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config, DTYPE};
use std::path::Path;
use tokenizers::{PaddingParams, Tokenizer, TruncationParams};

use crate::JobError;

/// Sentences run through the model together.
pub const BATCH: usize = 32;
/// Tokens kept per sentence (the model's training length).
pub const MAX_TOKENS: usize = 256;

pub struct Embedder {
    model: BertModel,
    tokenizer: Tokenizer,
    device: Device,
    pub dimensions: usize,
}

/// The device jobs run on: the first CUDA GPU when built with `cuda` and one
/// is present, else the CPU.
pub fn device() -> Device {
    #[cfg(feature = "cuda")]
    if let Ok(d) = Device::new_cuda(0) {
        return d;
    }
    Device::Cpu
}

impl Embedder {
    pub fn load(model: &Path, tokenizer: &Path, config: &Path, device: Device) -> Result<Embedder, JobError> {
        let config_text = std::fs::read_to_string(config).map_err(JobError::provider)?;
        let config: Config =
            serde_json::from_str(&config_text).map_err(|e| JobError::job(format!("config.json is not a BERT config: {e}")))?;
        let mut tokenizer = Tokenizer::from_file(tokenizer)
            .map_err(|e| JobError::job(format!("tokenizer.json does not load: {e}")))?;
        tokenizer
            .with_truncation(Some(TruncationParams { max_length: MAX_TOKENS, ..Default::default() }))
            .map_err(|e| JobError::job(format!("tokenizer: {e}")))?;
        tokenizer.with_padding(Some(PaddingParams::default()));
        // Safety: the file is in the provider's cache, checked against its hash,
        // and not modified while mapped.
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[model], DTYPE, &device) }
            .map_err(|e| JobError::job(format!("model.safetensors does not load: {e}")))?;
        let model = BertModel::load(vb, &config).map_err(|e| JobError::job(format!("the model does not match its config: {e}")))?;
        Ok(Embedder { model, tokenizer, device, dimensions: config.hidden_size })
    }

    /// One vector per sentence, in order.
    pub fn embed(&self, sentences: &[&str], normalize: bool) -> Result<Vec<Vec<f32>>, JobError> {
        let mut out = Vec::with_capacity(sentences.len());
        for batch in sentences.chunks(BATCH) {
            out.extend(self.embed_batch(batch, normalize).map_err(|e| JobError::provider(format!("candle: {e}")))?);
        }
        Ok(out)
    }

    fn embed_batch(&self, batch: &[&str], normalize: bool) -> anyhow::Result<Vec<Vec<f32>>> {
        let encodings = self.tokenizer.encode_batch(batch.to_vec(), true).map_err(|e| anyhow::anyhow!("{e}"))?;
        let ids: Vec<Tensor> = encodings.iter().map(|e| Tensor::new(e.get_ids(), &self.device)).collect::<Result<_, _>>()?;
        let mask: Vec<Tensor> =
            encodings.iter().map(|e| Tensor::new(e.get_attention_mask(), &self.device)).collect::<Result<_, _>>()?;
        let ids = Tensor::stack(&ids, 0)?;
        let mask = Tensor::stack(&mask, 0)?;
        let types = ids.zeros_like()?;
        let hidden = self.model.forward(&ids, &types, Some(&mask))?;
        // Mean over real tokens only.
        let mask_f = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
        let summed = hidden.broadcast_mul(&mask_f)?.sum(1)?;
        let counts = mask_f.sum(1)?;
        let mut pooled = summed.broadcast_div(&counts)?;
        if normalize {
            pooled = pooled.broadcast_div(&pooled.sqr()?.sum_keepdim(1)?.sqrt()?)?;
        }
        Ok(pooled.to_dtype(DType::F32)?.to_vec2::<f32>()?)
    }
}

/// The sentences of an input: one per line, blank lines skipped.
pub fn sentences(text: &str) -> Vec<&str> {
    text.lines().map(str::trim).filter(|l| !l.is_empty()).collect()
}

/// NumPy `.npy` (format 1.0) of a float32 matrix.
pub fn to_npy(vectors: &[Vec<f32>], dimensions: usize) -> Vec<u8> {
    let header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({}, {dimensions}), }}", vectors.len());
    // Magic (6) + version (2) + length (2) + header + newline, padded to 64 bytes.
    let unpadded = 10 + header.len() + 1;
    let pad = (64 - unpadded % 64) % 64;
    let header_len = header.len() + pad + 1;
    let mut out = Vec::with_capacity(10 + header_len + vectors.len() * dimensions * 4);
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header_len as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend(std::iter::repeat_n(b' ', pad));
    out.push(b'\n');
    for v in vectors {
        for x in v {
            out.extend_from_slice(&x.to_le_bytes());
        }
    }
    out
}

/// Reads a `.npy` float32 matrix written by [`to_npy`] (for clients and tests).
pub fn from_npy(bytes: &[u8]) -> Result<Vec<Vec<f32>>, String> {
    if bytes.len() < 10 || &bytes[..8] != b"\x93NUMPY\x01\x00" {
        return Err("not an .npy 1.0 file".into());
    }
    let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = std::str::from_utf8(bytes.get(10..10 + header_len).ok_or("short header")?).map_err(|e| e.to_string())?;
    if !header.contains("'<f4'") {
        return Err("not little-endian float32".into());
    }
    let shape = header.split("'shape': (").nth(1).and_then(|s| s.split(')').next()).ok_or("no shape")?;
    let dims: Vec<usize> = shape.split(',').filter(|s| !s.trim().is_empty()).map(|s| s.trim().parse()).collect::<Result<_, _>>().map_err(|e| format!("shape: {e}"))?;
    let [rows, cols] = dims[..] else { return Err("not a matrix".into()) };
    let data = &bytes[10 + header_len..];
    if data.len() != rows * cols * 4 {
        return Err("data length does not match the shape".into());
    }
    Ok(data.chunks_exact(cols * 4).map(|row| row.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()).collect())
}

/// The JSON output format.
pub fn to_json(vectors: &[Vec<f32>], dimensions: usize, model: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({ "model": model, "dimensions": dimensions, "vectors": vectors }))
        .expect("vectors serialise")
}
