"""The review surfaces: the admin screens, the auditors' REST API and the evidence
bundle. They read chains through :mod:`chain_grant.core` and revoke through it."""
