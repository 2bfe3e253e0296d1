"""t5pre.evaluation"""
