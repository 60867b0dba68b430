"""Deployment (AWS, Modal) and the local emulators of Lambda's function URL and Runtime API."""
