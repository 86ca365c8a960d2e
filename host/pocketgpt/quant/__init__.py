"""Weight quantization: GGML block formats (byte-identical to llama.cpp's) and the quantizers."""
