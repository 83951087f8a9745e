"""The core: storage and its migrations, the dossier and draft domain, audit, sealing, config.

It imports nothing of the web pages, the devices or sync (tests/test_layers.py checks it).
"""
