//! Embeddings from the real all-MiniLM-L6-v2 (fetched by scripts/fetch-model.sh)
//! against the same model run one sentence at a time, directly with candle.

use candle_core::{Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config, DTYPE};
use std::path::PathBuf;
use tessera_runtime::embed::{from_npy, to_npy, Embedder};
use tessera_runtime::models::{hash_file, ModelCache, Source};

fn model_dir() -> PathBuf {
    let dir = tessera_runtime::models::default_model_dir().expect("HOME or TESSERA_MODEL_DIR");
    assert!(dir.join("model.safetensors").exists(), "{} has no model: run scripts/fetch-model.sh", dir.display());
    dir
}

/// One sentence, no padding, straight through candle's BERT.
fn direct(sentence: &str) -> Vec<f32> {
    let dir = model_dir();
    let config: Config = serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let mut tokenizer = tokenizers::Tokenizer::from_file(dir.join("tokenizer.json")).unwrap();
    // tokenizer.json pads to 128 tokens; one sentence needs no padding (and no mask).
    tokenizer.with_padding(None);
    let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[dir.join("model.safetensors")], DTYPE, &Device::Cpu).unwrap() };
    let model = BertModel::load(vb, &config).unwrap();
    let enc = tokenizer.encode(sentence, true).unwrap();
    let ids = Tensor::new(enc.get_ids(), &Device::Cpu).unwrap().unsqueeze(0).unwrap();
    let hidden = model.forward(&ids, &ids.zeros_like().unwrap(), None).unwrap();
    let mean = hidden.mean(1).unwrap().squeeze(0).unwrap().to_vec1::<f32>().unwrap();
    let norm = mean.iter().map(|x| x * x).sum::<f32>().sqrt();
    mean.iter().map(|x| x / norm).collect()
}

#[test]
fn batched_embeddings_match_the_model_run_directly() {
    let dir = model_dir();
    let e = Embedder::load(&dir.join("model.safetensors"), &dir.join("tokenizer.json"), &dir.join("config.json"), Device::Cpu)
        .unwrap();
    assert_eq!(e.dimensions, 384);
    let sentences = ["A cat sits on the mat.", "A kitten is resting on a rug.", "Quarterly revenue grew by eight percent in Asia."];
    let got = e.embed(&sentences, true).unwrap();
    for (s, v) in sentences.iter().zip(&got) {
        let want = direct(s);
        let worst = v.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(worst < 1e-4, "{s}: differs by {worst}");
    }
    let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
    assert!(dot(&got[0], &got[1]) > dot(&got[0], &got[2]) + 0.3, "similar sentences lie closer");
    let npy = to_npy(&got, 384);
    assert_eq!(from_npy(&npy).unwrap(), got);
}

#[test]
fn model_cache_fetches_by_hash_and_refuses_what_differs() {
    let dir = model_dir();
    let hash = hash_file(&dir.join("config.json")).unwrap();
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = ModelCache::new(cache_dir.path().join("models"), vec![Source::Dir(dir.clone())]).unwrap();
    let path = cache.get(&hash).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), std::fs::read(dir.join("config.json")).unwrap());
    // A damaged cached file is noticed and fetched again.
    let fresh = ModelCache::new(cache_dir.path().join("models"), vec![Source::Dir(dir)]).unwrap();
    std::fs::write(&path, b"{}").unwrap();
    assert_eq!(hash_file(&fresh.get(&hash).unwrap()).unwrap(), hash);
    // Unknown hashes are refused with a reason; so is a malformed one.
    let missing = "0".repeat(64);
    assert!(fresh.get(&missing).unwrap_err().to_string().contains("not available"));
    assert!(fresh.get("abc").unwrap_err().to_string().contains("64 hex"));
}

