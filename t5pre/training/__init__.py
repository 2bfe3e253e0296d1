"""t5pre.training"""
