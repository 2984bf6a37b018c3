"""edgeseg.edge: the lean streaming runtime. Never imports torch (a test proves it).

Python 3.8-compatible (JetPack 5).
"""
