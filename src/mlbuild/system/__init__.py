"""What makes a folder of components a system: overlays, accounts, hooks, the image profile, the cpio
writer and the initramfs compression.
"""
