"""Decoding: the decode loop, judging candidates against the code below, drafts, healing, the per-document prefix cache."""
