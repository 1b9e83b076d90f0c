"""LiteRT (.tflite) for Android: fp32, fp16 weights and int8 from the inference form."""
