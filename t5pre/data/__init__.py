"""t5pre.data"""
