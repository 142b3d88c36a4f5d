"""Real text models built from published weights, with no model hub and no GPU.

``modelcast models build minilm --out DIR`` writes DIR/model.onnx (fp32, tokenizer embedded in
its metadata) plus the tokenizer files; ``modelcast quantize`` makes an int8 variant; the edge
serves either as texts in, vectors out. Needs the ``models`` extra (safetensors, tokenizers);
an edge that only runs models needs neither (and ``tokenizers`` alone to serve text).
"""
