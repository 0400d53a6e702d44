"""The common layer every stage uses: files, images, masks, the class map, metrics, devices.

It imports nothing but `segtool.core`; see docs/architecture.md.
"""
