"""`litgpt chat`: interactive conversations (see `litgpt.chat.base`)."""
