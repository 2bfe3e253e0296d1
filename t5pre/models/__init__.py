"""t5pre.models"""
