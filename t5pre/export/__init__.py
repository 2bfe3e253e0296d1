"""t5pre.export"""
