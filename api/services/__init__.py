"""The rules behind the routes: what creating, deleting or retraining means, in plain functions.

Routes (`api/routes/`) speak HTTP: they read the request, pick the caller and wire idempotency;
these functions take a tenant's repository and the stores, and return an `Outcome` (the answer,
with rows added but not committed, and what to do after the commit).
"""
