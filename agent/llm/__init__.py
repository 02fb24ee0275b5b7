"""Everything that talks to or about a language model: the chat client adapter (the only place that
imports langchain-community), the bundled GGUF models, prompt filling and reading replies."""
