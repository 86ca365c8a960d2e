"""Shrink a GPT-2 for the ESP32-S3: trim the BPE vocabulary, prune the structure, distill.

vocab.py    keep the first K merges of the teacher's BPE (exact BPE still, decodes anything)
prune.py    drop layers, heads, MLP neurons and embedding width, initialised from the teacher
distill.py  knowledge distillation (KL to the teacher mapped onto the trimmed vocabulary + CE)
plan.py     pick a shape that fits the device budget (pocketgpt.budget)
"""
