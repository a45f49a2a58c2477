//! GGUF files (llama.cpp): header, metadata and tensors, with dequantisation to f32.
