//! The hostile corpus: files made here, byte for byte, each the way a careless user, a broken
//! download or a hostile file would present it (decompression bombs, forged and truncated
//! headers, FIFOs, links to devices, malformed annotations, GGUF headers that lie, corrupt
//! checkpoints), and a runner that measures a command's peak memory. `tests/hostile.rs` pairs
//! each file with the outcome it must have.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use image::{ImageEncoder, RgbImage};

/// A small real photo: a gradient, so that every codec has something to compress.
pub fn small_rgb(w: u32, h: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([
            (x * 7 % 256) as u8,
            (y * 5 % 256) as u8,
            ((x + y) % 256) as u8,
        ])
    })
}

pub fn png(image: &RgbImage) -> Vec<u8> {
    let mut bytes = Vec::new();
    image::codecs::png::PngEncoder::new(&mut bytes)
        .write_image(
            image.as_raw(),
            image.width(),
            image.height(),
            image::ExtendedColorType::Rgb8,
        )
        .expect("png");
    bytes
}

pub fn jpeg(image: &RgbImage) -> Vec<u8> {
    let mut bytes = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 80)
        .write_image(
            image.as_raw(),
            image.width(),
            image.height(),
            image::ExtendedColorType::Rgb8,
        )
        .expect("jpeg");
    bytes
}

pub fn webp(image: &RgbImage) -> Vec<u8> {
    let mut bytes = Vec::new();
    image::codecs::webp::WebPEncoder::new_lossless(&mut bytes)
        .write_image(
            image.as_raw(),
            image.width(),
            image.height(),
            image::ExtendedColorType::Rgb8,
        )
        .expect("webp");
    bytes
}

/// A valid 8x8 JPEG whose frame header (SOF0) then declares `w` x `h`: a few hundred bytes
/// that ask a naive decoder for `w * h * 3` bytes.
pub fn jpeg_bomb(w: u16, h: u16) -> Vec<u8> {
    let mut bytes = jpeg(&small_rgb(8, 8));
    let sof = bytes
        .windows(2)
        .position(|m| m == [0xFF, 0xC0])
        .expect("baseline JPEG has SOF0");
    // FF C0, length (2), precision (1), height (2), width (2).
    bytes[sof + 5..sof + 7].copy_from_slice(&h.to_be_bytes());
    bytes[sof + 7..sof + 9].copy_from_slice(&w.to_be_bytes());
    bytes
}

/// CRC-32 (IEEE), as PNG chunks carry it.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A valid 8x8 PNG whose IHDR (with a correct CRC) then declares `w` x `h`.
pub fn png_bomb(w: u32, h: u32) -> Vec<u8> {
    let mut bytes = png(&small_rgb(8, 8));
    // Signature (8), IHDR length (4), "IHDR" (4), width (4), height (4), 5 more, CRC (4).
    bytes[16..20].copy_from_slice(&w.to_be_bytes());
    bytes[20..24].copy_from_slice(&h.to_be_bytes());
    let crc = crc32(&bytes[12..29]);
    bytes[29..33].copy_from_slice(&crc.to_be_bytes());
    bytes
}

/// A lossless WebP whose VP8L header then declares 16383 x 16383 (image-webp reads the
/// format's 16384 as 0).
pub fn webp_bomb() -> Vec<u8> {
    let mut bytes = webp(&small_rgb(8, 8));
    let at = bytes
        .windows(4)
        .position(|m| m == b"VP8L")
        .expect("lossless WebP");
    // "VP8L", chunk size (4), signature 0x2F, then width-1 and height-1 in 14 bits each.
    let bits: u32 = 16382 | (16382 << 14) | (u32::from(bytes[at + 12]) >> 4 << 28);
    bytes[at + 9..at + 13].copy_from_slice(&bits.to_le_bytes());
    bytes
}

/// Writes `bytes` at `path`, creating its folder.
pub fn write(path: &Path, bytes: &[u8]) -> PathBuf {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("mkdir");
    }
    std::fs::write(path, bytes).expect("write");
    path.to_path_buf()
}

pub fn symlink(target: &Path, link: &Path) -> PathBuf {
    std::os::unix::fs::symlink(target, link).expect("symlink");
    link.to_path_buf()
}

pub fn fifo(path: &Path) -> PathBuf {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).expect("path");
    // SAFETY: `c` is a NUL-terminated path that outlives the call.
    let rc = unsafe { libc::mkfifo(c.as_ptr(), 0o644) };
    assert_eq!(rc, 0, "mkfifo {}", path.display());
    path.to_path_buf()
}

/// A sparse file of `len` bytes: as large as a file gets, without using the disk.
pub fn sparse(path: &Path, len: u64) -> PathBuf {
    let file = std::fs::File::create(path).expect("create");
    file.set_len(len).expect("set_len");
    path.to_path_buf()
}

/// A GGUF file (version 3) of a LLaMA with `blocks` blocks of F32 tensors, width 8, vocab 16,
/// whose metadata says `block_count` blocks and RMS epsilon `eps`: with `block_count ==
/// blocks` and a positive `eps` a valid model, else a header that lies.
pub fn gguf_llama(blocks: u32, block_count: u32, eps: f32) -> Vec<u8> {
    gguf_llama_with(blocks, block_count, eps, false)
}

/// `gguf_llama`, with `unknown` adding a tensor of an unknown type that claims 2^62 values
/// (a type without a known size escapes the parser's size check).
pub fn gguf_llama_with(blocks: u32, block_count: u32, eps: f32, unknown: bool) -> Vec<u8> {
    let (hidden, ff, vocab, heads) = (8u64, 16u64, 16u64, 2u32);
    let mut out = Vec::new();
    let string = |out: &mut Vec<u8>, s: &str| {
        out.extend_from_slice(&(s.len() as u64).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    };
    let mut tensors: Vec<(String, Vec<u64>)> = vec![
        ("token_embd.weight".into(), vec![hidden, vocab]),
        ("output_norm.weight".into(), vec![hidden]),
    ];
    for b in 0..blocks {
        for (name, dims) in [
            ("attn_norm", vec![hidden]),
            ("ffn_norm", vec![hidden]),
            ("attn_q", vec![hidden, hidden]),
            ("attn_k", vec![hidden, hidden]),
            ("attn_v", vec![hidden, hidden]),
            ("attn_output", vec![hidden, hidden]),
            ("ffn_gate", vec![hidden, ff]),
            ("ffn_up", vec![hidden, ff]),
            ("ffn_down", vec![ff, hidden]),
        ] {
            tensors.push((format!("blk.{b}.{name}.weight"), dims));
        }
    }
    out.extend_from_slice(b"GGUF");
    out.extend_from_slice(&3u32.to_le_bytes());
    out.extend_from_slice(&(tensors.len() as u64 + u64::from(unknown)).to_le_bytes());
    let u32s = [
        ("llama.block_count", block_count),
        ("llama.embedding_length", hidden as u32),
        ("llama.feed_forward_length", ff as u32),
        ("llama.attention.head_count", heads),
        ("llama.attention.head_count_kv", heads),
        ("llama.context_length", 64),
        ("llama.vocab_size", vocab as u32),
    ];
    out.extend_from_slice(&(u32s.len() as u64 + 2).to_le_bytes());
    string(&mut out, "general.architecture");
    out.extend_from_slice(&8u32.to_le_bytes());
    string(&mut out, "llama");
    for (key, value) in u32s {
        string(&mut out, key);
        out.extend_from_slice(&4u32.to_le_bytes());
        out.extend_from_slice(&value.to_le_bytes());
    }
    string(&mut out, "llama.attention.layer_norm_rms_epsilon");
    out.extend_from_slice(&6u32.to_le_bytes());
    out.extend_from_slice(&eps.to_le_bytes());
    let mut offset = 0u64;
    let mut data = Vec::new();
    for (name, dims) in &tensors {
        string(&mut out, name);
        out.extend_from_slice(&(dims.len() as u32).to_le_bytes());
        for d in dims {
            out.extend_from_slice(&d.to_le_bytes());
        }
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&offset.to_le_bytes());
        let n: u64 = dims.iter().product();
        for i in 0..n {
            data.extend_from_slice(&(((i % 7) as f32 - 3.0) * 0.01).to_le_bytes());
        }
        while data.len() % 32 != 0 {
            data.push(0);
        }
        offset = data.len() as u64;
    }
    if unknown {
        string(&mut out, "blk.0.mystery.weight");
        out.extend_from_slice(&1u32.to_le_bytes());
        out.extend_from_slice(&(1u64 << 62).to_le_bytes());
        out.extend_from_slice(&99u32.to_le_bytes());
        out.extend_from_slice(&0u64.to_le_bytes());
    }
    while out.len() % 32 != 0 {
        out.push(0);
    }
    out.extend_from_slice(&data);
    out
}

/// A safetensors file of `tensors` (name, shape, f32 values).
pub fn safetensors(tensors: &[(&str, Vec<usize>, Vec<f32>)]) -> Vec<u8> {
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, _, v)| v.iter().flat_map(|x| x.to_le_bytes()).collect())
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .zip(&bytes)
        .map(|((name, shape, _), b)| {
            (
                name.to_string(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), b)
                    .expect("view"),
            )
        })
        .collect();
    safetensors::serialize(views, None).expect("serialize")
}

/// What a finished command left.
pub struct Measured {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    /// Peak resident memory, in MiB.
    pub peak_mib: f64,
    pub seconds: f64,
}

/// Runs `command` to its end (killing it after `timeout`, which fails the test) and reports
/// its peak resident memory, read from the kernel when the process is reaped (`wait4`).
// The child is reaped by `wait4` below, which `Child` does not know of.
#[allow(clippy::zombie_processes)]
pub fn measured(mut command: Command, timeout: Duration) -> Measured {
    let started = Instant::now();
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawns");
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = Vec::new();
            let _ = pipe.read_to_end(&mut text);
            String::from_utf8_lossy(&text).into_owned()
        })
    };
    let out = drain(Box::new(child.stdout.take().expect("stdout")));
    let err = drain(Box::new(child.stderr.take().expect("stderr")));
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: an all-zero `rusage` is a valid value of that plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: `status` and `usage` are valid for writes; `pid` is our child.
        let rc = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        if rc == pid {
            break;
        }
        assert!(rc == 0, "wait4 failed");
        if started.elapsed() > timeout {
            let _ = child.kill();
            // SAFETY: as above.
            unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
            panic!(
                "{command:?} ran past {timeout:?}; its stderr: {}",
                err.join().unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    use std::os::unix::process::ExitStatusExt;
    Measured {
        status: ExitStatus::from_raw(status),
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
        peak_mib: usage.ru_maxrss as f64 / 1024.0,
        seconds: started.elapsed().as_secs_f64(),
    }
}
