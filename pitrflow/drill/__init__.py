"""The nightly recovery drill: restore to a scratch instance, check it, measure, tear down."""
