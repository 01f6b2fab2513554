/*
 * text: small pieces of reading text that several parsers share (TOML
 * escapes and numbers, gRPC's percent-encoded messages, the simulator's
 * kernel names), so each reads them the same way.
 */
#ifndef GPULET_TEXT_H
#define GPULET_TEXT_H

/* The value of one hexadecimal digit (either case), or -1 when c is not one. */
int text_hex_value(int c);

#endif
