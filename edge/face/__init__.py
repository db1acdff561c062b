"""Face admission at the gate: season-pass holders recognised from the lane camera's frames, offline.

The site's sealed templates (from the change feed) are decrypted into an in-memory float32 gallery
(`gallery`), frames are analysed by the face encoder in a worker process so dlib never stalls the QR
path or the decision loop (`worker`, `pipeline`), and `matcher` turns faces into a credential under
the quality gates and the threshold rule of `rule` (threshold by gallery size, margin, k of m frames);
the admission itself is the same `decide()` as for a QR code.
"""
