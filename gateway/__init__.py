"""Bitcache payment gateway: releases file chunks against paid L402 tokens."""
