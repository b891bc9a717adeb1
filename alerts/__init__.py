"""Alerts: rules over readings and device status, the alert store, and notifiers."""
