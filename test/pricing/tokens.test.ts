import { get_encoding } from "tiktoken";
import { afterAll, describe, expect, it } from "vitest";
import { tokenCounter } from "../../src/pricing/tokens.ts";

const encodings = { o200k_base: get_encoding("o200k_base"), cl100k_base: get_encoding("cl100k_base") };
afterAll(() => {
  for (const e of Object.values(encodings)) e.free();
});

const texts = [
  "Hello, world!",
  "   leading and trailing whitespace runs \n\n\t\t ",
  "const x = { a: [1, 2, 3], b: 'str' }; // code\nfunction f(y) { return y ** 2; }",
  "Grüße aus Köln — naïve café, 東京で会いましょう",
  "emoji 🚀✨👩‍👩‍👧‍👦 and flags 🇩🇪🇯🇵",
  '{"json": true, "nested": {"list": [null, 1.5e-7, "s"]}}',
  "<|endoftext|> is just text here",
  "x".repeat(5000),
];

// Special-token text in user content is plain text to the provider: tiktoken's encode_ordinary.
describe.each(Object.keys(encodings) as Array<keyof typeof encodings>)(
  "token counts equal tiktoken's (%s)",
  (name) => {
    const tiktoken = encodings[name];

    it("for text", async () => {
      const counter = await tokenCounter(name);
      for (const text of texts) {
        expect(counter.text(text), text.slice(0, 30)).toBe(tiktoken.encode_ordinary(text).length);
      }
    });

    it("for chat prompts, with OpenAI's per-message accounting", async () => {
      const messages = [
        { role: "system", content: texts[0] },
        { role: "user", name: "dev", content: texts[2] },
        {
          role: "user",
          content: [
            { type: "text", text: texts[3] },
            { type: "text", text: texts[4] },
          ],
        },
      ];
      const count = (s: string) => tiktoken.encode_ordinary(s).length;
      const expected =
        3 +
        (3 + count("system") + count(texts[0] as string)) +
        (3 + count("user") + count("dev") + 1 + count(texts[2] as string)) +
        (3 + count("user") + count((texts[3] as string) + (texts[4] as string)));
      expect((await tokenCounter(name)).chat(messages)).toBe(expected);
    });
  },
);
