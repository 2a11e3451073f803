"""Authorisation at relay with an app's own JWT: settings, verification, permissions, the auth endpoints and
sign-in at connect. Nothing here is imported at start-up unless an app has a `[apps.jwt]` table."""
