"""dvc-kiosk: one Flask app for citizen kiosks, post-office counters and mobile teams.

The app factory is ``kiosk.app.create_app``; the layers are drawn in docs/architecture.md.
"""
