raise SystemExit("flaky-team: missing OPENAI_API_KEY")
