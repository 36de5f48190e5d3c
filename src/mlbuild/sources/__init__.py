"""Where sources come from: downloads checked by sha256, safe unpacking, mirrors and local overrides.
Each fetch step uses these; nothing here knows about tasks.
"""
